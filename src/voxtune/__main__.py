import sys

from voxtune.cli import main

sys.exit(main())
