/* hostward.agent.fim._fimscan: skeleton, filled in by its owner this session. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "hostward.agent.fim._fimscan", NULL, -1, NULL};

PyMODINIT_FUNC PyInit__fimscan(void) { return PyModule_Create(&module); }
