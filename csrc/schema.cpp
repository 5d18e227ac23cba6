// The schema of idselect::select for C++ users who load the CMake-built library without
// Python. The Python package defines the same schema itself (idselect/_ops.py) and never
// compiles this file: the schema must have exactly one owner per process. A test keeps the
// two strings equal.
#include <torch/library.h>

TORCH_LIBRARY(idselect, m) {
  m.def("select(Tensor features, Tensor scores, int k, float gamma=20.0, Tensor? lengths=None) -> Tensor");
}
