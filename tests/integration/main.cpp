// Runner of the shared-daemon integration suite (proxy_test.cpp).
#include "suite.hpp"

int main(int argc, char* argv[]) { return it::run_suite(argc, argv, "integration tests"); }
