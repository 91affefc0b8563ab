"""Run a packaged SavedModel's serving signature under another TensorFlow: the serving side of
`make serving-check`.

    <serving venv>/bin/python infra/serving_check.py SAVED_MODEL_DIR ROWS.npy OUT.json

SageMaker's TF Serving image (`churn-model deploy`'s DEFAULT_FRAMEWORK_VERSION) runs the TensorFlow
release named in model/deploy.py SERVING_TENSORFLOW, older than the one training exports with. This
script runs in a venv holding only that release (`make serving-check` builds it), loads the
SavedModel exactly as TF Serving does (by its `serving_default` signature, no Keras, no project
code) and writes every output for the rows given, so tests/functional/test_infra_serving.py can
compare them with the exporting TensorFlow's. Standard library, numpy and TensorFlow only.
"""

from __future__ import annotations

import json
import sys


def main(saved_model_dir: str, rows_file: str, out_file: str) -> int:
    import numpy as np
    import tensorflow as tf

    loaded = tf.saved_model.load(saved_model_dir)
    signature = loaded.signatures["serving_default"]
    outputs = signature(features=tf.constant(np.load(rows_file), dtype=tf.float32))
    result = {
        "tensorflow": tf.__version__,
        "outputs": {name: value.numpy().tolist() for name, value in outputs.items()},
    }
    with open(out_file, "w") as handle:
        json.dump(result, handle)
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 4:
        print(__doc__.strip().splitlines()[3].strip(), file=sys.stderr)
        sys.exit(2)
    sys.exit(main(*sys.argv[1:]))
