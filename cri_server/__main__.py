import sys

from cri_server.cli import main

sys.exit(main())
