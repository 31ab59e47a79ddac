// The log copier as a program of its own, for runtime_test (the product runs `cutover task-log`,
// which calls the same function): log_copier_main --log FILE
#include <cstdio>
#include <cstring>

#include "runtime/log_copier.hpp"

int main(int argc, char** argv) {
  if (argc != 3 || std::strcmp(argv[1], "--log") != 0) {
    std::fprintf(stderr, "usage: %s --log FILE\n", argv[0]);
    return 2;
  }
  return cutover::runtime::run_log_copier(argv[2], 0);
}
