// Command-line handling shared by the benchmark programs (Boost.Program_options): parses argv
// into vm; on --help prints the options (where print_help: rank 0 of an MPI job) and returns
// false, and the program exits 0. Bad flags or values throw boost::program_options::error.
#pragma once

#include <boost/program_options.hpp>

#include <iostream>

namespace ra::bench {

inline bool parse_options(int argc, char** argv,
                          const boost::program_options::options_description& opts,
                          boost::program_options::variables_map& vm, bool print_help = true) {
  namespace po = boost::program_options;
  po::store(po::parse_command_line(argc, argv, opts), vm);
  if (vm.count("help")) {
    if (print_help) std::cout << opts << std::endl;
    return false;
  }
  po::notify(vm);
  return true;
}

}  // namespace ra::bench
