"""Job files: ``reader`` (text -> located entries, YAML or JSONL), ``load`` (entries -> validated
:class:`~batchgen.jobs.load.Job` requests, local images as ``data:`` URIs), ``schema`` (the job
file's JSON Schema for editors)."""
