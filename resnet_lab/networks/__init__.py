"""The networks: the tap contract (taps), shortcuts and after-addition functions that declare
their formulas (shortcuts), the residual unit (units), the families of nets (families) and
the registry of names (registry)."""
