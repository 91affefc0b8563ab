"""The ML library: simulators, training examples, the multi-task network, training, calibration,
metrics, the bundle, export, the local model server and deployment. Imports `features` and
`plumbing` only; never the worker or an offline job."""
