"""A run: ``runner`` (dispatch, stop), ``feed`` (the job file in chunks), ``job`` (one job's
journey: generate, record, fetch, save), ``selection`` (which jobs to send), ``retry`` (the
attempt loop), ``control`` (signals, stops), ``summary`` (the run's report), ``observers``
(progress, metrics file, report page)."""
