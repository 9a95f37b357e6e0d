"""Training, evaluation, datasets and the paper's reproduction, with their command lines.

A sibling of the inference library: it imports `model`, never the other way round, and the service never imports
it. Commands: `python -m model.training.train`, `.evaluate`, `.reproduce`, `.data` (each with `--help`);
`python -m model.training` lists them and runs `python -m model.training COMMAND ...` the same way.
"""
