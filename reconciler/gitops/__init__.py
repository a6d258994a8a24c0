"""The GitOps loop around plan/apply: guard rails, git revisions, drift, watch, export and adopt."""
