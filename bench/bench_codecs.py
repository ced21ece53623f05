"""Every lossless codec on the same pairs: ratio (artifact and payload), MB/s end to end and at the codec level at
1 and 2 threads, FM-Delta's order-0 bound, peak RSS. Same as ``modelcodecs bench``; see ``codecs/bench.py``.

    python bench/bench_codecs.py [--quick] [--synthetic | --tiny | --pair BASE FT] [--elements N] [--json PATH]
"""

import sys

from modelcodecs.bench import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
