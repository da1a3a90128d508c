import sys

from fit3d_ros.cli.main import main

sys.exit(main())
