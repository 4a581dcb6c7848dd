/*
 * daemon/util/json_type.h: the name of a JSON value's type for error messages ("... is an
 * array, expected an object"). Header-only so that dsd_util itself needs no jansson; include
 * it only where jansson is linked.
 */
#ifndef DSD_UTIL_JSON_TYPE_H
#define DSD_UTIL_JSON_TYPE_H

#include <jansson.h>

static inline const char *dsd_json_type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    default: return "null";
    }
}

#endif
