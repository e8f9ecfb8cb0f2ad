'''
A blind sender, as a spoofer is: sends COUNT datagrams of SIZE bytes to
HOST:PORT from one socket, then counts what came back (a spoofer would
not see it; its victim would). Prints the bytes each way and the ratio.

    python3 docs/course/blind_sender.py 127.0.0.1:5555 10 1
'''
import socket
import sys

host, port = sys.argv[1].rsplit(':', 1)
count, size = int(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(count):
    s.sendto(b'a' * size, (host, int(port)))
# Replies on loopback arrive at once; half a second of quiet ends the count.
s.settimeout(0.5)
back, datagrams = 0, 0
try:
    while True:
        data, _ = s.recvfrom(65536)
        back += len(data)
        datagrams += 1
except socket.timeout:
    pass
sent = count * size
ratio = back / sent if sent else float('inf') if back else 0.0
wire = (back + 28 * datagrams) / (sent + 28 * count)
print(f'sent {count} datagrams, {sent} bytes; got {datagrams} datagrams, '
      f'{back} bytes back: {ratio:.2f}x payload, {wire:.2f}x on the wire')
