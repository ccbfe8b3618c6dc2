"""torchtitan builders of the TST specs (data, validation, metrics, optimizer, LR scheduler, loss)
and every config check. May import job_config, run_files, method, datastore and infra."""
