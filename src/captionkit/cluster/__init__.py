"""The Ray cluster face: caption a dataset of millions of images with Ray Data.

    captionkit caption images/ --model hf:... --ray auto --output-dir out/

* :mod:`.inputs`  the run's inputs as one Ray Dataset of ``__id``/``__image`` rows (folders,
  Parquet/CSV/JSONL tables, HF datasets, WebDataset shards), minus what ``out/`` already holds;
* :mod:`.actor`   one loaded captioner per Ray actor, calling the engine's batch function
  (:func:`captionkit.engine.batch.caption_records`), so every backend runs unchanged;
* :mod:`.output`  Parquet output shards written atomically by the driver, a manifest, and the
  scan that makes a rerun resume (skip every id already in the output);
* :mod:`.driver`  ties them together: ``ray.init``, the actor pool, the stream of results.

Ray Data does the scheduling, retries and back-pressure (no scheduler of ours). Ray is an
optional extra (``captionkit[ray]``) and is imported only when a cluster run starts.
"""
