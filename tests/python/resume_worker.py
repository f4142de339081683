"""A fresh process that resumes a saved dataset state (tests/python/test_resume.py).

    python resume_worker.py DATA_DIR STATE_JSON WORLD WORKERS

Prints, as JSON, the ids every shard of the (WORLD ranks x WORKERS workers) topology yields.
"""

from __future__ import annotations

import json
import sys

import test_resume as tr

if __name__ == "__main__":
    data_dir, state_path, world, workers = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    state = json.loads(open(state_path).read())
    out, _, _ = tr.run(lambda: tr.make_041(data_dir, "buffer"), (world, workers), state=state)
    print(json.dumps([out[k] for k in sorted(out)]))
