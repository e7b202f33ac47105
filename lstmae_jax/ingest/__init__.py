"""Raw CICFlowMeter input -> canonical, clean Arrow tables: the column schema (three naming
styles), raw CSV parsing, cleaning policies, conversion to Parquet, and chunked reading
for the scorer. numpy and pyarrow only: no JAX.
"""
