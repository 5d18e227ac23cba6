// Python module stub: importing idselect._C loads this library, whose static initialisers
// register the kernels (TORCH_LIBRARY_IMPL). The schema itself is defined in idselect/_ops.py.
// One function: cpu_isa(), the x86-64 level the CPU kernel's hot loops run at (benchmarks and
// tests; IDSELECT_CPU_ISA chooses it, csrc/cpu/select_cpu.cpp).
#include <Python.h>

#include <exception>

namespace idselect {
const char* cpu_isa_name();
}

static PyObject* cpu_isa(PyObject*, PyObject*) {
  try {
    return PyUnicode_FromString(idselect::cpu_isa_name());
  } catch (const std::exception& error) {
    PyErr_SetString(PyExc_ValueError, error.what());
    return nullptr;
  }
}

static PyMethodDef methods[] = {
    {"cpu_isa", cpu_isa, METH_NOARGS, "The x86-64 level of the CPU kernel's hot loops for a call made now."},
    {nullptr, nullptr, 0, nullptr}};

extern "C" PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, methods};
  return PyModule_Create(&module);
}
