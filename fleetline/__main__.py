import sys

from fleetline.cli import main

sys.exit(main())
