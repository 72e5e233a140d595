"""The pipeline's steps: operations, locks, releases, rollout, deploy and the rest."""
