"""`hyperprag train --config configs/hypernet/X.yaml`: Lightning training of the hypernetwork from a YAML file.

A LightningCLI over HyperLoRAModule and HyperDataModule without subcommands: the config's `model:`,
`data:`, `trainer:` and `checkpoint:` sections, plus `--ckpt_path PATH|last` to resume. Defaults: an
offline Weights & Biases logger (no account needed; `wandb sync <run dir>/wandb/offline-run-*` uploads it
later; set `trainer.logger` to a CSVLogger instead), a ModelCheckpoint on val/loss (best + last) in
<default_root_dir>/checkpoints, a learning-rate monitor and `seed_everything: 0`. The strategy comes from
`trainer:` (`strategy: ddp` with `accelerator: cpu` uses gloo; `fsdp` on GPUs). After fit the best
hypernetwork is exported to <default_root_dir>/hypernet (hypernet/checkpoint.py).

Multi-process strategies (ddp) relaunch the running command line for every rank, so start them from the
shell (`hyperprag train --config ...` or `python -m training.hypernet_cli --config ...`), not by calling
`run_train` from another program.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.cli import LightningCLI

from training.hypernet_data import HyperDataModule
from training.hypernet_module import HyperLoRAModule


def _checkpoint_dir(root: str | None) -> str:
    return str(Path(root or ".") / "checkpoints")


class HyperCLI(LightningCLI):
    """LightningCLI with the data/model links and the checkpoint callback as a config section."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument("--ckpt_path", type=str | None, default=None,
                            help="resume training from this Lightning checkpoint, or 'last'")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults({"checkpoint.monitor": "val/loss", "checkpoint.mode": "min",
                             "checkpoint.save_top_k": 1, "checkpoint.save_last": True,
                             "checkpoint.filename": "best-{epoch:03d}-{step}", "checkpoint.auto_insert_metric_name": False})
        parser.link_arguments("trainer.default_root_dir", "checkpoint.dirpath", compute_fn=_checkpoint_dir)
        parser.link_arguments("model.base_model", "data.base_model")
        parser.link_arguments("data.encoder", "model.encoder", apply_on="instantiate")


    def before_instantiate_classes(self) -> None:
        """An offline W&B logger without a save_dir writes into the run folder (not the working directory)."""
        trainer = self.config["trainer"]
        logger = trainer.get("logger")
        if isinstance(logger, dict) or hasattr(logger, "class_path"):
            init = logger["init_args"] if isinstance(logger, dict) else logger.init_args
            if str(logger["class_path"]).endswith("WandbLogger") and init.get("save_dir") in (None, ".", "./"):
                init["save_dir"] = trainer.get("default_root_dir") or "."


def default_trainer(root: str = "runs/hypernet") -> dict:
    """Trainer defaults: offline W&B logging under the run folder, a learning-rate monitor."""
    return {
        "default_root_dir": root,
        "logger": {"class_path": "pytorch_lightning.loggers.WandbLogger",
                   "init_args": {"offline": True, "project": "hyperprag-hypernet", "save_dir": None}},
        "callbacks": [LearningRateMonitor(logging_interval="step")],  # LightningCLI appends instances as is
        "log_every_n_steps": 10,
    }


def run_train(args: list[str] | None = None) -> Path:
    """Train from a config (`["--config", "configs/hypernet/X.yaml", ...]`); returns the exported folder."""
    os.environ.setdefault("WANDB_SILENT", "true")
    # `hyperprag train ...` passes its own argv on: LightningCLI's "args and sys.argv both given" is expected.
    warnings.filterwarnings("ignore", message=".*LightningCLI's args parameter is intended.*")
    cli = HyperCLI(HyperLoRAModule, HyperDataModule, args=args, run=False, seed_everything_default=0,
                   trainer_defaults=default_trainer(), save_config_kwargs={"overwrite": True},
                   parser_kwargs={"description": "Train the hypernetwork (student) on teacher LoRAs."})
    ckpt_path = cli.config.get("ckpt_path")
    cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=ckpt_path)
    model = cli.model
    return Path(model.hparams.export_dir or Path(cli.trainer.default_root_dir) / "hypernet")


def main() -> None:
    run_train()


if __name__ == "__main__":
    main()
