"""The graph: interned nodes, the one table of operations, reverse mode, formulas."""
