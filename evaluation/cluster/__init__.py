"""Scale-out of the evaluation over a Ray cluster (``--cluster``); utils/cluster.py holds the connection."""
