"""The bottom floor: AWS plumbing with no domain in it. The error root and the usage error
(`exceptions`), what a failed AWS call means and how long to wait (`retry`), who owns client
lifetimes (`clients`), the standard chain's region and endpoint (`awsenv`), DynamoDB table helpers
(`tables`), and the engine that runs offline work over customer shards, in process or on Dask
(`parallel`). Imports nothing of this project."""
