"""Print numbered lines on stdout and stderr alternately, then a \\r progress line
and a last line without a newline; exit with the code given as argv[1]."""

import sys

for i in range(200):
    stream = sys.stdout if i % 2 else sys.stderr
    stream.write(f"line {i} é\n")
    stream.flush()
sys.stdout.write("progress 1\rprogress 2\r\ntail")
sys.stdout.flush()
sys.exit(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
