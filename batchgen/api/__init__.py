"""The API as batchgen meets it: ``client`` (aiohttp -> typed errors, cost headers, bounded
bodies) and ``answers`` (every answer shape -> one :class:`~batchgen.api.answers.Answer`)."""
