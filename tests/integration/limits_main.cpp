// Runner of the limits suite (limits_test.cpp): descriptor exhaustion and a full SOCKHASH.
#include "suite.hpp"

int main(int argc, char* argv[]) { return it::run_suite(argc, argv, "limits tests"); }
