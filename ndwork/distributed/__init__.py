"""Data-parallel training and parallel work on dask.distributed.

`NeuralForecast.fit(df, distributed=True | n | Client | "tcp://address")` trains on a
dask cluster: an embedded LocalCluster on 127.0.0.1 by default, any Client or
scheduler address for more machines. Tasks are stateless and every random draw
happens on the driver, so a lost worker costs one retried round, not the run.
"""

from ndwork.distributed.backend import DaskSteps
from ndwork.distributed.cluster import connect

__all__ = ["DaskSteps", "connect"]
