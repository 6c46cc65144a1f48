// Lets the JasperFx command line find the module's commands ("retention").
[assembly: JasperFx.JasperFxAssembly]
