"""The cluster map: target nodes, disk policies, volumes and replicas, VIPs, sessions.

model.py (records and checks), placement.py (where replicas go), state.py (the
map inside the replicated store, with indexes), apply.py (the operations, one
revision each), controller.py (the leader's timers).
"""
