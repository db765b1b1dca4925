package mbtcp

import (
	"fmt"
	"strings"
)

// String is not a number type: the registers hold text (two bytes each), for a STRING property.
// ValueSpec does not take it; TypeFromModel returns it for the caller to read text.
const String DataType = "string"

// TypeFromModel is the register data type of a model property type and a limit (0: not given):
// FLOAT/DOUBLE → float32 (2 registers) or float64 (4); INT → int16 (1), int32 (2) or int64 (4);
// BOOLEAN → one register, non-zero is true; STRING → "string" (limit registers of text). What cannot
// work is an error naming the fields.
func TypeFromModel(modelType string, limit int) (DataType, error) {
	switch strings.ToUpper(modelType) {
	case "FLOAT", "DOUBLE":
		switch limit {
		case 0, 2:
			if strings.EqualFold(modelType, "DOUBLE") && limit == 0 {
				return Float64, nil
			}
			return Float32, nil
		case 4:
			return Float64, nil
		}
		return "", fmt.Errorf("model type %s with limit %d: a float takes 2 registers (float32) or 4 (float64); set limit 2 or 4, or an explicit dataType", strings.ToUpper(modelType), limit)
	case "INT":
		switch limit {
		case 0, 1:
			return Int16, nil
		case 2:
			return Int32, nil
		case 4:
			return Int64, nil
		}
		return "", fmt.Errorf("model type INT with limit %d: an integer takes 1 (int16), 2 (int32) or 4 (int64) registers; set one of those, or an explicit dataType", limit)
	case "BOOLEAN":
		if limit > 1 {
			return "", fmt.Errorf("model type BOOLEAN with limit %d: a boolean in registers is one register (non-zero is true)", limit)
		}
		return Uint16, nil
	case "STRING":
		return String, nil
	case "BYTES", "STREAM":
		return "", fmt.Errorf("model type %s is not read from Modbus registers by this mapper; use a codec (visitor \"codec\") for it", strings.ToUpper(modelType))
	case "":
		// No model type (not expected from a mapper, which always has the model): KubeEdge's old
		// default, unsigned by limit.
		if limit == 2 {
			return Uint32, nil
		}
		return Uint16, nil
	}
	return "", fmt.Errorf("model type %q is not one of INT, FLOAT, DOUBLE, STRING, BOOLEAN", modelType)
}
