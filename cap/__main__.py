import sys

from cap.cli import main

sys.exit(main())
