# Sourced by the bash stage scripts (run_pipeline.sh, run_profiles.sh, gpu_checks.sh); it only defines functions.
# last_ckpt RUN_DIR: the last.ckpt of the newest lightning_logs/version_N of a Lightning run in RUN_DIR
# (nothing, with ls's error and a failed status, when the run has no version yet).
last_ckpt() { ls -d "$1"/lightning_logs/version_* | sort -V | tail -n 1 | sed 's#$#/checkpoints/last.ckpt#'; }
