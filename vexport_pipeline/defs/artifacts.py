"""The IO manager of deployments whose steps run on workers with homes of their own (`VEXPORT_ARTIFACTS`):
each step's output is pickled to the artifact store with the files it names, and the next step, wherever it
runs, gets the record back with those files under its own `VEXPORT_HOME` (core/artifacts.py)."""

from __future__ import annotations

import os
import pickle
import socket
from pathlib import Path

import dagster as dg

from vexport_pipeline.core import artifacts
from vexport_pipeline.core.errors import StorageError


def value_key(
    *, asset: dg.AssetKey | None, partition: str | None, run_id: str, step: str, output: str, mapping: str | None
) -> str:
    """An asset's value by asset and partition (the latest materialization, as Dagster's own IO managers keep
    it); an op's value by run, step, output and mapping key. A partition is an export: its values sit beside
    its files."""
    base = f"exports/{partition}/values" if partition else "values"
    if asset is not None:
        return artifacts.check_key(f"{base}/{'/'.join(asset.path)}.pickle")
    name = f"{output}.{mapping}" if mapping else output
    return artifacts.check_key(f"{base}/runs/{run_id}/{step}/{name}.pickle")


def _output_key(context: dg.OutputContext) -> str:
    asset = context.asset_key if context.has_asset_key else None
    if asset is not None:
        partition = context.asset_partition_key if context.has_asset_partitions else None
    else:
        partition = context.partition_key if context.has_partition_key else None
    return value_key(
        asset=asset,
        partition=partition,
        run_id=context.run_id,
        step=context.step_key,
        output=context.name,
        mapping=context.mapping_key,
    )


def _input_key(context: dg.InputContext) -> str:
    up = context.upstream_output
    if context.has_asset_key:
        partition = context.asset_partition_key if context.has_asset_partitions else None
        return value_key(asset=context.asset_key, partition=partition, run_id="", step="", output="", mapping=None)
    if up.has_asset_key:  # read back outside a step (a run's result: `output_for_node`)
        return _output_key(up)
    return value_key(
        asset=None,
        partition=context.partition_key if context.has_partition_key else None,
        run_id=up.run_id,
        step=up.step_key,
        output=up.name,
        mapping=up.mapping_key,
    )


class ArtifactIOManager(dg.ConfigurableIOManager):
    """Step outputs in the artifact store, the files they name with them; inputs re-rooted under this worker's
    home, downloading only the files it does not have."""

    home: str  # this worker's VEXPORT_HOME
    url: str  # VEXPORT_ARTIFACTS
    endpoint_url: str = ""

    def _store(self) -> artifacts.ArtifactStore:
        return artifacts.open_store(self.url, self.endpoint_url)

    def handle_output(self, context: dg.OutputContext, obj) -> None:
        store, key = self._store(), _output_key(context)
        value, files = artifacts.detach(obj, Path(self.home), store)
        store.write(key, pickle.dumps(value))
        context.add_output_metadata(
            {
                "artifact": f"{store.url}/{key}",
                "files": len(files),
                # which worker made it, for a person reading the run (and the two-worker test)
                "worker": f"{socket.gethostname()} pid {os.getpid()}",
                "worker_home": dg.MetadataValue.path(self.home),
            }
        )

    def load_input(self, context: dg.InputContext):
        store, key = self._store(), _input_key(context)
        data = store.read(key)
        if data is None:
            raise StorageError(f"{store.url}/{key} is missing: its step has not run", where=key)
        value, fetched = artifacts.attach(pickle.loads(data), Path(self.home), store)
        if fetched:
            size = sum(f.size for f in fetched)
            context.log.info(f"{context.name}: downloaded {len(fetched)} file(s), {size:,} bytes, from {store.url}")
        return value
