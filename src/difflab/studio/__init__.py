"""difflab studio: a local web app to compare runs and sample any checkpoint (`python studio.py`, docs/studio.md).

- `files`: the served folders (runs and checkpoints) and the check that refuses any path outside them;
- `models`: the one bounded cache of loaded models;
- `forms`: a Sample-tab request as the `python sample.py` overrides (and command) that reproduce it;
- `service`: `Studio`, what the page does, without the page (open, generate, measure);
- `runs`: the Runs tab's table, grids and plot (`difflab.compare`);
- `measure`: the Measure tab's regressor;
- `app`: the Gradio page.

Gradio is the optional extra `studio`; importing this package turns Gradio's analytics off before it loads.
"""

import os

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
