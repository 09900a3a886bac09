from edge.cli import edge_entry

edge_entry()
