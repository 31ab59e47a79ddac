// The log copier as a program of its own, for runtime_test (the product runs `cutover task-log`,
// which calls the same function): log_copier_main --log FILE [--format k8s-file]
#include <cstdio>
#include <cstring>

#include "runtime/log_copier.hpp"

int main(int argc, char** argv) {
  using cutover::runtime::LogFormat;
  const bool k8s =
      argc == 5 && std::strcmp(argv[3], "--format") == 0 && std::strcmp(argv[4], "k8s-file") == 0;
  if ((argc != 3 && !k8s) || std::strcmp(argv[1], "--log") != 0) {
    std::fprintf(stderr, "usage: %s --log FILE [--format k8s-file]\n", argv[0]);
    return 2;
  }
  return cutover::runtime::run_log_copier(argv[2], 0, k8s ? LogFormat::K8sFile : LogFormat::Raw);
}
