"""The dream3d web UI: `python app.py [--port 7860] [--runs-dir runs]` (same as `dream3d app`)."""
import sys

from dream3d.webapp import main

if __name__ == "__main__":
    sys.exit(main())
