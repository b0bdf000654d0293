"""How much bulk work one turn of the event loop may do.

The operator runs on one event loop: while a list of thousands of rows is decoded or walked, no
Socket.IO frame is read and no status is written. Bulk work yields to the loop at these bounds, so
a QR event waits behind at most one piece of it (bench/README.md, "Fourth round").
"""

# Rows of a list handled between two turns of the event loop.
ROWS_PER_TURN = 200
# An answer larger than this is decoded in a turn of the event loop of its own.
LARGE_ANSWER_BYTES = 64 * 1024
