"""``python -m cryspnet_gen.cli``: the same as the ``cryspnet-gen`` command."""

import sys

from cryspnet_gen.cli import main

sys.exit(main())
