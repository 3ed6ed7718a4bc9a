"""The ablation grid (`hyperprag ablate`): its config, dataset inputs and report; hyperprag/ablate.py runs it."""
