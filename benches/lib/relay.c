#define _GNU_SOURCE
/* The least work a proxy can do per request on loopback: relay bytes between each client
 * connection and one upstream connection of its own, with epoll, read and write. No parsing,
 * no buffering beyond one read. Used by benches/floor.sh to measure the kernel's share. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_FDS 65536
static int peer[MAX_FDS];

static void nodelay(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static int send_all(int fd, const char *p, ssize_t n) {
  while (n > 0) {
    ssize_t w = send(fd, p, n, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (w < 0 && errno == EAGAIN) {
      struct pollfd pfd = {.fd = fd, .events = POLLOUT};
      poll(&pfd, 1, 1000);
      continue;
    }
    if (w <= 0) return -1;
    p += w;
    n -= w;
  }
  return 0;
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: relay LISTEN_PORT UPSTREAM_PORT\n");
    return 2;
  }
  struct sockaddr_in la = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[1]))};
  struct sockaddr_in ua = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
  inet_pton(AF_INET, "127.0.0.1", &la.sin_addr);
  inet_pton(AF_INET, "127.0.0.1", &ua.sin_addr);
  int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;
  setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(ls, (struct sockaddr *)&la, sizeof la) || listen(ls, 1024)) {
    perror("relay: listen");
    return 1;
  }
  int ep = epoll_create1(0);
  struct epoll_event ev = {.events = EPOLLIN, .data.fd = ls}, evs[64];
  epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
  static char buf[65536];
  for (;;) {
    int n = epoll_wait(ep, evs, 64, -1);
    for (int i = 0; i < n; i++) {
      int fd = evs[i].data.fd;
      if (fd == ls) {
        int c;
        while ((c = accept4(ls, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
          int u = socket(AF_INET, SOCK_STREAM, 0);
          if (u < 0 || u >= MAX_FDS || c >= MAX_FDS ||
              connect(u, (struct sockaddr *)&ua, sizeof ua)) {
            perror("relay: upstream");
            close(c);
            if (u >= 0) close(u);
            continue;
          }
          nodelay(c);
          nodelay(u);
          peer[c] = u;
          peer[u] = c;
          ev.data.fd = c;
          epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev);
          ev.data.fd = u;
          epoll_ctl(ep, EPOLL_CTL_ADD, u, &ev);
        }
        continue;
      }
      if (peer[fd] < 0) continue; /* closed earlier in this batch */
      ssize_t r = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
      if (r < 0 && errno == EAGAIN) continue;
      if (r <= 0 || send_all(peer[fd], buf, r)) {
        int p = peer[fd];
        peer[fd] = -1;
        peer[p] = -1;
        close(fd);
        close(p);
      }
    }
  }
}
