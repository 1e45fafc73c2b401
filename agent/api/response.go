package api

// Response is an inference response (the Open Inference Protocol's REST
// form, docs/agent.md) as a client reads it; the server writes it without
// this type (encode.go). Data decodes numbers, the data of every datatype
// but BOOL.
type Response struct {
	ModelName    string           `json:"model_name"`
	ModelVersion string           `json:"model_version"`
	ID           string           `json:"id,omitempty"`
	Outputs      []ResponseTensor `json:"outputs"`
}

// ResponseTensor is one output tensor of a Response.
type ResponseTensor struct {
	Name     string    `json:"name"`
	Datatype string    `json:"datatype"`
	Shape    []int64   `json:"shape"`
	Data     []float64 `json:"data"`
}

// Output returns the first value of output name, and whether there is
// one.
func (r *Response) Output(name string) (float64, bool) {
	for _, o := range r.Outputs {
		if o.Name == name && len(o.Data) > 0 {
			return o.Data[0], true
		}
	}
	return 0, false
}
