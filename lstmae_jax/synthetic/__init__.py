"""Generated flows in the CICFlowMeter schema (the embedded default data): one flow from
its packets, a timeline of benign traffic with attack episodes, writers of the raw
CSV styles. No JAX.
"""
