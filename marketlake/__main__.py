import sys

from marketlake.cli.app import main

sys.exit(main())
