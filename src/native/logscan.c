/* hostward.agent.detectors._logscan: skeleton, filled in by its owner this session. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "hostward.agent.detectors._logscan", NULL, -1, NULL};

PyMODINIT_FUNC PyInit__logscan(void) { return PyModule_Create(&module); }
