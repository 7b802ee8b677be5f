// agentcron's entry point: everything is wired in run_cli().
#include "agentcron/cli.hpp"

int main(int argc, char** argv) { return agentcron::run_cli(argc, argv); }
