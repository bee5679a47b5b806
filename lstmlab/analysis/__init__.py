"""Analysis: what finished (or running) run folders say — compare's verdicts, inspect's gradient flow,
sample's text, exports to MLflow and TensorBoard. Run folders are read only through lstmlab.run.reader
(RunView: config, rows, summary, env and weights of one folder, by its format)."""
