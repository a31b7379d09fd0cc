"""coord: a Raft-replicated metadata store and cluster coordinator for iSCSI block storage."""
