'''
Simple udp socket client: figure 8.5 ported to Python 3 (print(), input(),
bytes), otherwise unchanged; it stops at the end of its input.
'''
import socket
import sys

try:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    print('Socket created')
except socket.error as msg:
    print('Failed to create socket.')
    sys.exit()

host = 'localhost'
port = 8888
s.settimeout(10)

while(1):
    try:
        msg = input('Enter message to send')
    except EOFError:
        break
    try:
        # Set the whole string
        s.sendto(msg.encode(), (host, port))
        # receive data from client (data, addr)
        d = s.recvfrom(1024)
        reply = d[0]
        addr = d[1]
        print('Server reply : ' + reply.decode())
    except socket.error as msg:
        print('Error Code: ' + str(msg))
        sys.exit(1)
