"""The ablation grid (`hyperprag ablate`): its config, dataset inputs, runner and report."""
