import sys

from llama2.cli.main import main

sys.exit(main())
