// Python module stub: importing idselect._C loads this library, whose static initialisers
// register the kernels (TORCH_LIBRARY_IMPL). The schema itself is defined in idselect/_ops.py.
#include <Python.h>

extern "C" PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module);
}
